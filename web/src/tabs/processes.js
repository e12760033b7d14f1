// Background processes (exec with background=true) and their output,
// followed live while the one shown runs.
import { can } from '../api.js';
import { mcp } from '../mcp.js';
import { h, clear, when, guard } from '../util.js';

const FOLLOW_MS = 1000;
const KEEP = 256 << 10;

export function processesTab(panel, bot) {
	if (!can('exec')) {
		clear(panel, h('p', { class: 'empty' }, 'This token has no exec scope: it cannot see processes.'));
		return null;
	}
	const listing = h('div', { class: 'scroll' });
	const out = h('pre', { class: 'output', tabindex: '0', 'aria-live': 'off' });
	const head = h('h2', {}, 'Output');
	let timer = null;
	let gone = false;
	clear(panel, h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: () => load() }, 'Refresh')), listing, head, out);

	async function load() {
		await guard(null, async () => {
			const l = await mcp.call('process_list', { bot_id: bot });
			const rows = (l.processes || []).map((p) => h('tr', {},
				h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', onclick: () => follow(p, 'stdout') }, p.id)),
				h('td', { class: 'cmd' }, p.command || (p.argv || []).join(' ')),
				h('td', {}, p.running ? 'running' : `exited ${p.exit_code ?? '?'}${p.signal ? ` (${p.signal})` : ''}`),
				h('td', {}, when(p.started_at)),
				h('td', {}, h('button', { type: 'button', 'aria-label': `stderr of ${p.id}`, onclick: () => follow(p, 'stderr') }, 'stderr'))));
			clear(listing, rows.length
				? h('table', { class: 'list' }, h('thead', {}, h('tr', {}, ['Id', 'Command', 'State', 'Started', ''].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
				: h('p', { class: 'empty' }, 'No background processes.'));
		});
	}

	// Each follow gets a generation: a read still in flight for the one
	// shown before stops there.
	let gen = 0;
	function follow(p, stream) {
		clearTimeout(timer);
		const mine = ++gen;
		head.textContent = `Output of ${p.id} (${stream})`;
		out.textContent = '';
		let offset = 0;
		const step = async () => {
			const c = await guard(null, () => mcp.call('process_output', { bot_id: bot, process_id: p.id, stream, offset }));
			if (gone || mine !== gen || !c) return;
			if (c.dropped) out.append(`[${c.dropped} bytes dropped]\n`);
			out.append(c.output);
			// Keep the page light on long outputs: only the tail stays.
			if (out.textContent.length > KEEP) out.textContent = out.textContent.slice(-KEEP);
			out.scrollTop = out.scrollHeight;
			offset = c.next_offset;
			if (c.running || c.next_offset < c.total) timer = setTimeout(step, c.next_offset < c.total ? 0 : FOLLOW_MS);
		};
		step();
	}

	load();
	return () => {
		gone = true;
		clearTimeout(timer);
	};
}
