// The snapshot lineage as a timeline, a diff between two versions (or a
// version and the live workspace), create, rollback and export.
import { can } from '../api.js';
import { mcp } from '../mcp.js';
import { h, clear, bytes, when, guard, confirmAction, notice } from '../util.js';

// progress shows a long call's progress notifications in the status line.
function progress(what) {
	return (p) => notice(`${what}: ${p.message || ''}${p.total ? ` ${Math.round((100 * p.progress) / p.total)}%` : ''}`.trim());
}

export function snapshotsTab(panel, bot) {
	const timeline = h('ol', { class: 'timeline', id: 'timeline' });
	const fromSel = h('select', { id: 'diff-from' });
	const toSel = h('select', { id: 'diff-to' });
	const diffOut = h('div', { class: 'scroll', id: 'diff' });
	const nameInput = h('input', { id: 'snap-name', placeholder: 'optional', autocomplete: 'off' });
	clear(panel,
		can('manage') ? h('form', {
			class: 'toolbar',
			onsubmit: (e) => {
				e.preventDefault();
				create(e.submitter);
			},
		}, h('label', { for: 'snap-name' }, 'Name '), nameInput, h('button', { type: 'submit', id: 'snap-create', class: 'primary' }, 'Take snapshot')) : null,
		h('h2', {}, 'Timeline'),
		timeline,
		h('h2', {}, 'Diff'),
		h('form', {
			class: 'toolbar',
			onsubmit: (e) => {
				e.preventDefault();
				diff(0, e.submitter);
			},
		}, h('label', { for: 'diff-from' }, 'From '), fromSel, h('label', { for: 'diff-to' }, 'to '), toSel,
		h('button', { type: 'submit', id: 'diff-run' }, 'Compare')),
		diffOut);

	async function load() {
		await guard(null, async () => {
			const l = await mcp.call('snapshot_list', { bot_id: bot });
			const versions = l.versions || [];
			clear(timeline,
				h('li', { class: 'image' }, h('strong', {}, 'image'), ' ', l.image),
				versions.map((v) => h('li', { 'data-version': v.version, class: `src-${v.source}` },
					h('div', { class: 'line' },
						h('strong', {}, `v${v.version}`), ' ',
						v.name ? h('span', { class: 'name' }, v.name) : null, ' ',
						h('span', { class: 'badge' }, v.source), ' ',
						h('span', {}, `${when(v.created_at)} · ${bytes(v.size_bytes)} of changes · on ${v.parent_version ? `v${v.parent_version}` : 'the image'}`)),
					can('manage') ? h('div', { class: 'row-actions' },
						h('button', { type: 'button', class: 'danger act-rollback', onclick: (e) => rollback(v, e.currentTarget) }, 'Roll back'),
						h('button', { type: 'button', class: 'act-export', onclick: (e) => exportImage(v, e.currentTarget) }, 'Export')) : null)),
				h('li', { class: 'live' }, h('strong', {}, 'live'), ` workspace, on ${l.live_based_on ? `v${l.live_based_on}` : (versions.length ? `v${versions[versions.length - 1].version}` : 'the image')}`));
			const opts = (sel, live) => {
				const prev = sel.value;
				clear(sel, live ? h('option', { value: '0' }, 'live workspace') : null,
					versions.slice().reverse().map((v) => h('option', { value: String(v.version) }, `v${v.version}${v.name ? ` ${v.name}` : ''}`)));
				if (prev && [...sel.options].some((o) => o.value === prev)) sel.value = prev;
			};
			opts(fromSel, false);
			opts(toSel, true);
		});
	}

	async function create(btn) {
		await guard(btn, async () => {
			const s = await mcp.call('snapshot_create', { bot_id: bot, name: nameInput.value.trim() || undefined }, progress('snapshot'));
			notice(`saved version ${s.version} (${bytes(s.size_bytes)}, paused ${s.pause_ms || 0} ms)`);
			nameInput.value = '';
			await load();
		});
	}

	async function rollback(v, btn) {
		const ok = await confirmAction(`Roll ${bot} back to v${v.version}?`, [
			`Every file is replaced by version ${v.version}: changes made since are undone.`,
			'The workspace restarts: running processes and terminals end.',
			'The state before is saved first as a pre_rollback version: roll back to it to undo.'], 'Roll back');
		if (!ok) return;
		await guard(btn, async () => {
			const out = await mcp.call('snapshot_rollback', { bot_id: bot, version: v.version }, progress('rollback'));
			notice(`${bot} now runs v${v.version}; the state before is v${out.pre_rollback.version}`);
			await load();
		});
	}

	async function exportImage(v, btn) {
		const ok = await confirmAction(`Export v${v.version} as an image?`, [
			`The image berth.local/snapshots/${bot}:v${v.version} is made from this version (nothing is copied).`,
			'An image exported from it before is replaced.'], 'Export');
		if (!ok) return;
		await guard(btn, async () => {
			const out = await mcp.call('snapshot_export', { bot_id: bot, version: v.version });
			notice(`exported ${out.name}`);
		});
	}

	async function diff(offset, btn) {
		if (!fromSel.value) {
			notice('No version yet: take a snapshot first.', true);
			return;
		}
		await guard(btn, async () => {
			const d = await mcp.call('snapshot_diff', { bot_id: bot, from_version: Number(fromSel.value), to_version: Number(toSel.value), offset, limit: 200 });
			const rows = (d.changes || []).map((c) => h('tr', { class: `k-${c.kind}` },
				h('td', {}, c.kind), h('th', { scope: 'row' }, c.path), h('td', {}, c.type), h('td', {}, c.type === 'file' ? bytes(c.size) : '')));
			clear(diffOut,
				h('p', {}, `${d.total} change(s)${d.truncated ? ' (more than can be listed)' : ''}`),
				rows.length ? h('table', { class: 'list' },
					h('thead', {}, h('tr', {}, ['Change', 'Path', 'Type', 'Size'].map((t) => h('th', { scope: 'col' }, t)))),
					h('tbody', {}, rows)) : null,
				d.next_offset ? h('button', { type: 'button', onclick: (e) => diff(d.next_offset, e.currentTarget) }, 'Next page') : null);
		});
	}

	load();
	return null;
}
