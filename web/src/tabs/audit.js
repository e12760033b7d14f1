// The audit lines of this bot (/ui/api/audit, from --audit-log).
import { getJSON } from '../api.js';
import { h, clear, when, guard } from '../util.js';

export function auditTab(panel, bot) {
	const body = h('div', { class: 'scroll' });
	clear(panel, h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: () => load() }, 'Refresh')), body);

	async function load() {
		await guard(null, async () => {
			const a = await getJSON(`/ui/api/audit?bot=${encodeURIComponent(bot)}&limit=200`);
			const lines = (a.lines || []).slice().reverse();
			clear(body,
				a.note ? h('p', { class: 'empty' }, `No audit log: start berth with --audit-log to keep one.`) : null,
				a.truncated ? h('p', {}, 'Showing the last 200 records.') : null,
				lines.length ? h('table', { class: 'list', id: 'audit' },
					h('thead', {}, h('tr', {}, ['Time', 'Token', 'Kind', 'What', 'Outcome', 'ms'].map((t) => h('th', { scope: 'col' }, t)))),
					h('tbody', {}, lines.map((r) => h('tr', { class: `o-${r.outcome}` },
						h('td', {}, when(r.time)),
						h('td', {}, r.token),
						h('td', {}, r.kind),
						h('td', {}, r.tool || r.resource || r.endpoint || ''),
						h('td', {}, `${r.outcome}${r.reason ? `: ${r.reason}` : ''}${r.status ? ` (${r.status})` : ''}`),
						h('td', {}, r.duration_ms !== undefined ? Number(r.duration_ms).toFixed(0) : ''))))) : (a.note ? null : h('p', { class: 'empty' }, 'No audit records for this bot.')));
		});
	}

	load();
	return null;
}
