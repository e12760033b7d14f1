// The file browser: fs_list to browse, GET/PUT /bots/{bot}/files to view,
// download and upload (streamed by the browser), fs_mkdir/fs_move/fs_delete.
import { can, fileURL, request, upload } from '../api.js';
import { mcp } from '../mcp.js';
import { h, clear, bytes, when, guard, ask, confirmAction, notice } from '../util.js';
import { highlight } from '../highlight.js';

const PAGE = 500;
const VIEW_MAX = 2 << 20;
const images = /\.(png|jpe?g|gif|webp|svg|ico|bmp|avif)$/i;

function join(dir, name) {
	return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

function parent(path) {
	const i = path.lastIndexOf('/');
	return i <= 0 ? '/' : path.slice(0, i);
}

export function filesTab(panel, bot) {
	let dir = '/data';
	let offset = 0;
	let objectURL = null;
	// The names in the folder shown, to ask before an upload replaces one.
	let names = new Set();
	const crumbs = h('nav', { class: 'path', 'aria-label': 'Folder' });
	const listing = h('div', { class: 'scroll' });
	const viewer = h('section', { class: 'viewer', 'aria-label': 'File' });
	const more = h('div', { class: 'more' });
	const fileInput = h('input', {
		type: 'file', id: 'upload', multiple: true, class: 'sr-only',
		onchange: () => guard(null, async () => {
			for (const f of fileInput.files) {
				if (names.has(f.name) && !(await confirmAction(`Replace ${f.name}?`, [`${join(dir, f.name)} is replaced by the uploaded file.`], 'Replace'))) continue;
				await upload(bot, join(dir, f.name), f);
				notice(`uploaded ${f.name} (${bytes(f.size)})`);
			}
			fileInput.value = '';
			await load();
		}),
	});
	const tools = h('div', { class: 'toolbar' },
		h('button', { type: 'button', onclick: () => go(parent(dir)), 'aria-label': 'Up one folder' }, '↑ Up'),
		h('button', { type: 'button', onclick: () => load() }, 'Refresh'),
		can('write') && [
			h('label', { for: 'upload', class: 'button', role: 'button', tabindex: '0', onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); fileInput.click(); } } }, 'Upload…'),
			fileInput,
			h('button', { type: 'button', id: 'mkdir', onclick: (e) => mkdir(e.currentTarget) }, 'New folder'),
		]);
	clear(panel, h('div', { class: 'files' }, h('div', {}, crumbs, tools, listing, more), viewer));

	function go(path) {
		dir = path;
		offset = 0;
		load();
	}

	function renderCrumbs() {
		const parts = dir.split('/').filter(Boolean);
		clear(crumbs, h('button', { type: 'button', class: 'link', onclick: () => go('/') }, '/'),
			parts.map((p, i) => {
				const to = `/${parts.slice(0, i + 1).join('/')}`;
				return [h('button', { type: 'button', class: 'link', onclick: () => go(to) }, p), i < parts.length - 1 ? '/' : ''];
			}));
	}

	async function load() {
		renderCrumbs();
		await guard(null, async () => {
			const out = await mcp.call('fs_list', { bot_id: bot, path: dir, offset, limit: PAGE });
			names = new Set((out.entries || []).map((e) => e.name));
			const rows = (out.entries || []).map((e) => h('tr', { 'data-path': e.path },
				h('th', { scope: 'row' }, e.type === 'dir'
					? h('button', { type: 'button', class: 'link dir', onclick: () => go(e.path) }, `${e.name}/`)
					: h('button', { type: 'button', class: 'link file', onclick: () => view(e) }, e.name + (e.link_target ? ` → ${e.link_target}` : ''))),
				h('td', {}, e.type === 'file' ? bytes(e.size) : e.type),
				h('td', {}, e.mode),
				h('td', {}, when(e.mod_time)),
				h('td', { class: 'row-actions' },
					e.type === 'file' ? h('a', { href: fileURL(bot, e.path), download: e.name, class: 'button', 'aria-label': `Download ${e.name}` }, 'Download') : null,
					can('write') ? [
						h('button', { type: 'button', 'aria-label': `Rename ${e.name}`, onclick: (ev) => rename(e, ev.currentTarget) }, 'Rename'),
						h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${e.name}`, onclick: (ev) => remove(e, ev.currentTarget) }, 'Delete'),
					] : null)));
			clear(listing, rows.length
				? h('table', { class: 'list', id: 'files' },
					h('thead', {}, h('tr', {}, ['Name', 'Size', 'Mode', 'Modified', ''].map((t) => h('th', { scope: 'col' }, t)))),
					h('tbody', {}, rows))
				: h('p', { class: 'empty' }, 'Empty folder.'));
			clear(more,
				offset > 0 ? h('button', { type: 'button', onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, 'Previous page') : null,
				out.next_offset ? h('button', { type: 'button', onclick: () => { offset = out.next_offset; load(); } }, `Next page (${out.total} entries)`) : null);
		});
	}

	async function view(e) {
		if (objectURL) URL.revokeObjectURL(objectURL);
		objectURL = null;
		const head = h('h2', {}, e.path);
		if (e.size > VIEW_MAX) {
			clear(viewer, head, h('p', {}, `${bytes(e.size)}: too large to show here; download it instead.`));
			return;
		}
		await guard(null, async () => {
			const blob = await (await request(fileURL(bot, e.path))).blob();
			if (images.test(e.name)) {
				objectURL = URL.createObjectURL(blob.type === 'application/octet-stream' && /\.svg$/i.test(e.name) ? new Blob([blob], { type: 'image/svg+xml' }) : blob);
				clear(viewer, head, h('img', { src: objectURL, alt: e.name, class: 'preview' }));
				return;
			}
			let text;
			try {
				text = new TextDecoder('utf-8', { fatal: true }).decode(await blob.arrayBuffer());
			} catch {
				clear(viewer, head, h('p', {}, 'A binary file: download it to open it.'));
				return;
			}
			const code = h('code', {});
			highlight(code, text, e.name);
			clear(viewer, head, h('pre', { class: 'code', tabindex: '0' }, code));
		});
	}

	async function mkdir(btn) {
		const name = await ask('New folder', 'Name', '', 'Create');
		if (!name) return;
		await guard(btn, async () => {
			await mcp.call('fs_mkdir', { bot_id: bot, path: join(dir, name) });
			await load();
		});
	}

	async function rename(e, btn) {
		const name = await ask(`Rename ${e.name}`, 'New name', e.name, 'Rename');
		if (!name || name === e.name) return;
		await guard(btn, async () => {
			await mcp.call('fs_move', { bot_id: bot, source: e.path, destination: join(parent(e.path), name) });
			await load();
		});
	}

	async function remove(e, btn) {
		const what = e.type === 'dir' ? `The folder ${e.path} and everything in it is deleted.` : `The file ${e.path} (${bytes(e.size)}) is deleted.`;
		if (!(await confirmAction(`Delete ${e.name}?`, [what, 'Only a snapshot taken before brings it back.'], 'Delete'))) return;
		await guard(btn, async () => {
			await mcp.call('fs_delete', { bot_id: bot, path: e.path, recursive: e.type === 'dir' });
			await load();
		});
	}

	load();
	return () => {
		if (objectURL) URL.revokeObjectURL(objectURL);
	};
}
