// The network: mode and policy, what it refused, and the bot's access
// requests with approve and deny.
import { can } from '../api.js';
import { mcp } from '../mcp.js';
import { events } from '../events.js';
import { h, clear, when, guard, notice } from '../util.js';

function rule(r) {
	return `${r.domain || r.cidr}${r.ports && r.ports.length ? ` ports ${r.ports.join(',')}` : ''}`;
}

function table(id, cols, rows, empty) {
	return rows.length
		? h('table', { class: 'list', id }, h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows))
		: h('p', { class: 'empty' }, empty);
}

export function networkTab(panel, bot) {
	const body = h('div', {});
	clear(panel, h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: () => load() }, 'Refresh')), body);

	async function decide(req, decision, btn) {
		await guard(btn, async () => {
			await mcp.call('network_request_decide', { bot_id: bot, request_id: req.id, decision });
			notice(`${decision === 'approve' ? 'approved' : 'denied'} ${rule(req.destination)}`);
			await load();
		});
	}

	async function load() {
		await guard(null, async () => {
			const n = await mcp.call('network_get', { bot_id: bot });
			const p = n.policy || { allow: [], deny: [] };
			const reqs = n.access_requests || [];
			const pending = reqs.filter((r) => r.status === 'pending');
			const decided = reqs.filter((r) => r.status !== 'pending').reverse();
			clear(body,
				h('p', {}, `Mode ${n.mode}${n.ip ? ` · address ${n.ip}` : ''}${n.gateway ? ` · gateway ${n.gateway}` : ''}`),
				h('h2', {}, 'Access requests'),
				table('requests', ['Destination', 'Reason', 'Asked by', 'Asked', can('manage') ? 'Decision' : null].filter(Boolean),
					pending.map((r) => h('tr', { 'data-request': r.id },
						h('th', { scope: 'row' }, rule(r.destination)),
						h('td', {}, r.reason),
						h('td', {}, r.requested_by || '–'),
						h('td', {}, when(r.requested_at)),
						can('manage') ? h('td', { class: 'row-actions' },
							h('button', { type: 'button', class: 'primary act-approve', onclick: (e) => decide(r, 'approve', e.currentTarget) }, 'Approve'),
							h('button', { type: 'button', class: 'danger act-deny', onclick: (e) => decide(r, 'deny', e.currentTarget) }, 'Deny')) : null)),
					'No pending requests.'),
				h('h2', {}, `Policy: default ${p.default}`),
				table('policy', ['Rule', 'Destination'],
					[...(p.allow || []).map((r) => h('tr', {}, h('td', {}, 'allow'), h('td', {}, rule(r)))),
						...(p.deny || []).map((r) => h('tr', {}, h('td', {}, 'deny'), h('td', {}, rule(r))))],
					'No rules.'),
				h('h2', {}, 'Refused recently'),
				table('denied', ['Destination', 'Protocol', 'Count', 'Last'],
					[...(n.denied_destinations || []).map((d) => h('tr', {}, h('td', {}, `${d.addr}${d.port ? `:${d.port}` : ''}`), h('td', {}, d.proto), h('td', {}, String(d.packets)), h('td', {}, when(d.last_seen)))),
						...(n.denied_names || []).map((d) => h('tr', {}, h('td', {}, `${d.name} (${d.reason})`), h('td', {}, `DNS ${d.type}`), h('td', {}, String(d.count)), h('td', {}, when(d.last))))],
					'Nothing refused.'),
				decided.length ? [h('h2', {}, 'Decided requests'),
					table('decided', ['Destination', 'Decision', 'By', 'When'],
						decided.map((r) => h('tr', {}, h('td', {}, rule(r.destination)), h('td', {}, r.status + (r.note ? ` (${r.note})` : '')), h('td', {}, r.decided_by || '–'), h('td', {}, when(r.decided_at)))), '')] : null);
		});
	}

	// A new request shows up without a click: the workspaces events count
	// the pending ones.
	let pending = null;
	const off = events.on((list) => {
		const w = list.find((x) => x.bot_id === bot);
		const n = w ? w.pending_requests || 0 : 0;
		if (pending !== null && n !== pending) load();
		pending = n;
	});
	load();
	return off;
}
