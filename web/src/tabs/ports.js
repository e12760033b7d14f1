// Ports the bot exposed through berth, with their links.
import { mcp } from '../mcp.js';
import { h, clear, when, guard } from '../util.js';

export function portsTab(panel, bot) {
	const body = h('div', { class: 'scroll' });
	clear(panel, h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: () => load() }, 'Refresh')), body);

	async function load() {
		await guard(null, async () => {
			const l = await mcp.call('port_list', { bot_id: bot });
			const ports = l.ports || [];
			clear(body, ports.length
				? h('table', { class: 'list', id: 'ports' },
					h('thead', {}, h('tr', {}, ['Port', 'Name', 'Protocol', 'Exposed', 'Open', 'Links'].map((t) => h('th', { scope: 'col' }, t)))),
					h('tbody', {}, ports.map((p) => h('tr', {},
						h('th', { scope: 'row' }, String(p.port)),
						h('td', {}, p.name || '–'),
						h('td', {}, p.protocol),
						h('td', {}, when(p.exposed_at)),
						h('td', {}, h('a', { href: p.url, target: '_blank', rel: 'noopener noreferrer' }, p.url),
							p.preview_url ? [' ', h('a', { href: p.preview_url, target: '_blank', rel: 'noopener noreferrer' }, 'preview')] : null),
						h('td', {}, `${(p.links || []).length} active`)))))
				: h('p', { class: 'empty' }, 'No exposed ports.'));
		});
	}

	load();
	return null;
}
