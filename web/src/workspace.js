// One workspace: a header with its live state and a tab per concern.
import { events } from './events.js';
import { h, clear, bytes, ago } from './util.js';
import { lifecycleButtons } from './overview.js';
import { terminalTab } from './tabs/terminal.js';
import { filesTab } from './tabs/files.js';
import { snapshotsTab } from './tabs/snapshots.js';
import { processesTab } from './tabs/processes.js';
import { mcpTab } from './tabs/mcp.js';
import { networkTab } from './tabs/network.js';
import { portsTab } from './tabs/ports.js';
import { auditTab } from './tabs/audit.js';

const tabs = {
	terminal: ['Terminal', terminalTab],
	files: ['Files', filesTab],
	snapshots: ['Snapshots', snapshotsTab],
	processes: ['Processes', processesTab],
	mcp: ['MCP servers', mcpTab],
	network: ['Network', networkTab],
	ports: ['Ports', portsTab],
	audit: ['Audit', auditTab],
};

export function workspacePage(main, bot, tab) {
	if (!tabs[tab]) tab = 'terminal';
	const summary = h('p', { class: 'summary' }, 'Waiting for the first update…');
	const actions = h('div', { class: 'actions' });
	const panel = h('section', { class: 'panel', id: 'panel', 'aria-label': tabs[tab][0] });
	clear(main,
		h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Workspaces'), ' / ', bot),
		h('div', { class: 'ws-head' }, h('h1', {}, bot), actions),
		summary,
		h('nav', { class: 'tabs', 'aria-label': 'Workspace' },
			Object.entries(tabs).map(([k, [label]]) => h('a', {
				href: `#/w/${encodeURIComponent(bot)}/${k}`,
				id: `tab-${k}`,
				'aria-current': k === tab ? 'page' : null,
			}, label))),
		panel);

	let status = null;
	// The last event may predate this workspace (just created): only a
	// fresh one may say that it does not exist.
	let stale = true;
	const off = events.on((list) => {
		const w = list.find((x) => x.bot_id === bot);
		if (!w) {
			if (stale) return;
			summary.textContent = events.truncated
				? 'No live figures for this workspace: the live list shows only the first workspaces.'
				: 'No such workspace (or not visible to this token).';
			clear(actions);
			status = null;
			return;
		}
		clear(summary,
			h('span', { class: `badge s-${w.status}` }, w.status), ' ',
			`${w.image} · network ${w.network_mode || '–'} · CPU ${(w.cpu_percent || 0).toFixed(1)}% · memory ${bytes(w.memory_bytes || 0)} · disk ${bytes(w.disk_bytes || 0)} · last activity ${ago(w.last_activity)}`);
		if (w.status !== status) clear(actions, lifecycleButtons(w));
		status = w.status;
	});
	stale = false;
	const stop = tabs[tab][1](panel, bot) || (() => {});
	return () => {
		off();
		stop();
	};
}
