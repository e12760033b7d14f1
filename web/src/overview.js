// Every workspace the token may read, live from the workspaces events.
import { can } from './api.js';
import { mcp } from './mcp.js';
import { events } from './events.js';
import { h, clear, bytes, ago, sparkline, confirmAction, guard, notice } from './util.js';

const sorts = {
	name: (a, b) => a.bot_id.localeCompare(b.bot_id),
	status: (a, b) => a.status.localeCompare(b.status) || sorts.name(a, b),
	cpu: (a, b) => (b.cpu_percent || 0) - (a.cpu_percent || 0) || sorts.name(a, b),
	memory: (a, b) => (b.memory_bytes || 0) - (a.memory_bytes || 0) || sorts.name(a, b),
	disk: (a, b) => (b.disk_bytes || 0) - (a.disk_bytes || 0) || sorts.name(a, b),
	activity: (a, b) => String(b.last_activity || '').localeCompare(String(a.last_activity || '')) || sorts.name(a, b),
};

function limits(l) {
	if (!l) return '–';
	const parts = [];
	if (l.cpus) parts.push(`${l.cpus} CPU`);
	if (l.memory_bytes) parts.push(bytes(l.memory_bytes));
	if (l.pids) parts.push(`${l.pids} pids`);
	return parts.join(' · ') || 'none';
}

// lifecycle runs start, stop or delete after saying what it costs.
export async function lifecycle(bot, action, btn) {
	const asks = {
		stop: [`Stop workspace ${bot}?`, [
			'Every process in it gets SIGTERM, then SIGKILL after the grace period.',
			'Open terminals and background processes end; their unsaved state is lost.',
			'Files are kept; it stays stopped until started again.'], 'Stop'],
		delete: [`Delete workspace ${bot}?`, [
			'All its files, including /data, are deleted.',
			'All its snapshot versions and data exports are deleted.',
			'Running processes and terminals end. This cannot be undone.'], 'Delete'],
	};
	if (asks[action] && !(await confirmAction(...asks[action]))) return;
	await guard(btn, async () => {
		await mcp.call(`workspace_${action}`, { bot_id: bot });
		notice(`${action === 'stop' ? 'stopped' : action === 'start' ? 'started' : 'deleted'} ${bot}`);
		// The page of a deleted workspace has nothing left to show.
		if (action === 'delete' && location.hash.startsWith('#/w/')) location.hash = '#/';
	});
}

export function lifecycleButtons(w) {
	if (!can('manage')) return [];
	const out = [];
	if (w.status === 'running') out.push(h('button', { type: 'button', class: 'act-stop', onclick: (e) => lifecycle(w.bot_id, 'stop', e.currentTarget) }, 'Stop'));
	else out.push(h('button', { type: 'button', class: 'act-start', onclick: (e) => lifecycle(w.bot_id, 'start', e.currentTarget) }, 'Start'));
	out.push(h('button', { type: 'button', class: 'act-delete danger', onclick: (e) => lifecycle(w.bot_id, 'delete', e.currentTarget) }, 'Delete'));
	return out;
}

export function overview(main) {
	const filter = h('input', { id: 'filter', type: 'search', placeholder: 'bot, image, status…', autocomplete: 'off' });
	const sort = h('select', { id: 'sort' }, Object.keys(sorts).map((k) => h('option', { value: k }, k)));
	const count = h('span', { class: 'count', 'aria-live': 'polite' });
	const body = h('tbody');
	const table = h('table', { class: 'workspaces' },
		h('caption', { class: 'sr-only' }, 'Workspaces'),
		h('thead', {}, h('tr', {}, ['Workspace', 'Status', 'Image', 'Limits', 'Network', 'CPU', 'Memory', 'Disk', 'MCP servers', 'Last activity', 'Requests', can('manage') ? 'Actions' : null]
			.filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
		body);
	const empty = h('p', { class: 'empty' }, 'Waiting for the first update…');
	clear(main,
		h('h1', {}, 'Workspaces'),
		h('div', { class: 'toolbar' },
			h('label', { for: 'filter' }, 'Filter '), filter,
			h('label', { for: 'sort' }, 'Sort by '), sort,
			count),
		empty,
		h('div', { class: 'scroll' }, table));

	// Rows are kept per bot and updated in place, so a focused button keeps
	// its focus across the updates every two seconds.
	const rows = new Map();

	function row(w) {
		let r = rows.get(w.bot_id);
		if (!r) {
			const cells = {};
			const td = (name, label) => (cells[name] = h('td', { 'data-label': label, class: `c-${name}` }));
			r = {
				cells,
				tr: h('tr', { 'data-bot': w.bot_id },
					h('th', { scope: 'row', 'data-label': 'Workspace' }, h('a', { href: `#/w/${encodeURIComponent(w.bot_id)}/terminal` }, w.bot_id)),
					td('status', 'Status'), td('image', 'Image'), td('limits', 'Limits'), td('network', 'Network'),
					td('cpu', 'CPU'), td('mem', 'Memory'), td('disk', 'Disk'), td('mcp', 'MCP servers'),
					td('activity', 'Last activity'), td('requests', 'Requests'),
					can('manage') ? td('actions', 'Actions') : null),
				status: null,
			};
			rows.set(w.bot_id, r);
		}
		const c = r.cells;
		const hst = events.history.get(w.bot_id) || { cpu: [], mem: [] };
		clear(c.status, h('span', { class: `badge s-${w.status}` }, w.status));
		c.image.textContent = w.image;
		c.limits.textContent = limits(w.limits);
		c.network.textContent = w.network_mode || '–';
		// Scaled to the recent peak (CPU to at least 5%), so that an idle
		// workspace's small changes still show; the figure beside is absolute.
		clear(c.cpu, sparkline(hst.cpu, Math.max(5, ...hst.cpu) * 1.1, `CPU of ${w.bot_id}`), h('span', {}, `${(w.cpu_percent || 0).toFixed(1)}%`));
		clear(c.mem, sparkline(hst.mem, Math.max(1, ...hst.mem) * 1.1, `memory of ${w.bot_id}`), h('span', {}, bytes(w.memory_bytes || 0)));
		c.disk.textContent = bytes(w.disk_bytes || 0);
		clear(c.mcp, (w.mcp_servers || []).length
			? (w.mcp_servers || []).map((s) => h('span', { class: `badge m-${s.state}`, title: s.state }, `${s.name}: ${s.state}`))
			: '–');
		c.activity.textContent = ago(w.last_activity);
		clear(c.requests, w.pending_requests
			? h('a', { href: `#/w/${encodeURIComponent(w.bot_id)}/network`, class: 'badge pending' }, `${w.pending_requests} pending`)
			: '–');
		if (c.actions && r.status !== w.status) clear(c.actions, lifecycleButtons(w));
		r.status = w.status;
		return r.tr;
	}

	function render(list) {
		const q = filter.value.trim().toLowerCase();
		const shown = list
			.filter((w) => !q || [w.bot_id, w.image, w.status, w.network_mode].some((s) => String(s || '').toLowerCase().includes(q)))
			.sort(sorts[sort.value]);
		const wanted = shown.map(row);
		const present = new Set(list.map((w) => w.bot_id));
		for (const bot of rows.keys()) if (!present.has(bot)) rows.delete(bot);
		// Reorder only when needed: moving a row would drop its focus.
		if (wanted.length !== body.children.length || wanted.some((tr, i) => body.children[i] !== tr)) body.replaceChildren(...wanted);
		count.textContent = `${shown.length} of ${list.length}${events.truncated ? ' (berth sends at most 500: filter narrows only these)' : ''}`;
		empty.textContent = list.length ? '' : 'No workspaces yet.';
		empty.hidden = list.length > 0;
	}

	const off = events.on(render);
	const rerender = () => events.workspaces && render(events.workspaces);
	filter.addEventListener('input', rerender);
	sort.addEventListener('change', rerender);
	return off;
}
