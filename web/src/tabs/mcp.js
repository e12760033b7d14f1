// The bot's MCP servers: state, tools and their logs.
import { mcp } from '../mcp.js';
import { h, clear, when, guard } from '../util.js';

export function mcpTab(panel, bot) {
	const listing = h('div', {});
	const logs = h('pre', { class: 'output', tabindex: '0' });
	const head = h('h2', {}, 'Logs');
	clear(panel, h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: () => load() }, 'Refresh')), listing, head, logs);

	async function showLogs(name) {
		await guard(null, async () => {
			const l = await mcp.call('mcp_server_logs', { bot_id: bot, name, lines: 200 });
			head.textContent = `Logs of ${name}`;
			logs.textContent = (l.lines || []).join('\n') || '(no output)';
		});
	}

	async function load() {
		await guard(null, async () => {
			const l = await mcp.call('mcp_server_list', { bot_id: bot });
			const servers = l.servers || [];
			clear(listing, servers.length ? servers.map((s) => h('article', { class: 'card' },
				h('h3', {}, s.name, ' ', h('span', { class: `badge m-${s.state}` }, s.state)),
				s.reason ? h('p', { class: 'error' }, s.reason) : null,
				h('p', {}, h('code', {}, [s.command, ...(s.args || [])].join(' '))),
				h('p', {}, `restarts ${s.restarts}${s.started_at ? ` · started ${when(s.started_at)}` : ''}${s.last_exit ? ` · last exit ${s.last_exit.code}${s.last_exit.error ? ` ${s.last_exit.error}` : ''}` : ''}`),
				h('details', {}, h('summary', {}, `${s.tool_count} tool(s)`), h('ul', {}, (s.tools || []).map((t) => h('li', {}, h('code', {}, t))))),
				h('button', { type: 'button', onclick: () => showLogs(s.name) }, 'Logs')))
				: h('p', { class: 'empty' }, 'No MCP servers in this workspace.'));
		});
	}

	load();
	return null;
}
