// The terminal: xterm.js on berth's terminal WebSocket. Binary frames carry
// bytes both ways; a text frame {"type":"resize","rows","cols"} resizes.
// Terminals outlive the page: reattaching shows the kept history first.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { can, session } from '../api.js';
import { mcp } from '../mcp.js';
import { h, clear, guard, ago, confirmAction } from '../util.js';

export function terminalTab(panel, bot) {
	if (!can('exec')) {
		clear(panel, h('p', { class: 'empty' }, 'This token has no exec scope: it cannot use terminals.'));
		return null;
	}
	const picker = h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Terminals' });
	const screen = h('div', { class: 'term', id: 'terminal' });
	const state = h('span', { class: 'term-state', role: 'status' });
	clear(panel, picker, state, screen);

	let term = null;
	let ws = null;
	let resizeObs = null;
	let closed = false;

	function detach() {
		if (ws) ws.close();
		ws = null;
		if (resizeObs) resizeObs.disconnect();
		resizeObs = null;
		if (term) term.dispose();
		term = null;
	}

	async function attach(id) {
		detach();
		term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, fontFamily: 'ui-monospace, Menlo, Consolas, monospace' });
		const fit = new FitAddon();
		term.loadAddon(fit);
		term.open(screen);
		fit.fit();
		const t = term;
		// The kept history first, so a reattached terminal shows its past;
		// the WebSocket then carries on from where the history ended, so
		// output written in between is neither lost nor shown twice.
		let from = '';
		try {
			const past = await mcp.call('terminal_read', { bot_id: bot, terminal_id: id, offset: 0, limit: 1 << 20 });
			if (past.output) t.write(past.output);
			if (Number.isInteger(past.next_offset)) from = `&offset=${past.next_offset}`;
		} catch { /* history is a nicety */ }
		if (t !== term) return;
		const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
		const sock = new WebSocket(`${proto}//${location.host}/bots/${encodeURIComponent(bot)}/terminal/ws?terminal_id=${encodeURIComponent(id)}${from}&csrf=${encodeURIComponent(session.me.csrf)}`);
		ws = sock;
		sock.binaryType = 'arraybuffer';
		const enc = new TextEncoder();
		const resize = () => {
			if (sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: 'resize', rows: t.rows, cols: t.cols }));
		};
		sock.onopen = () => {
			state.textContent = `attached to ${id}`;
			screen.dataset.attached = id;
			resize();
			t.focus();
		};
		sock.onmessage = (ev) => t.write(typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data));
		sock.onclose = (ev) => {
			delete screen.dataset.attached;
			if (!closed && ws === sock) state.textContent = `detached${ev.reason ? `: ${ev.reason}` : ''}`;
		};
		t.onData((d) => sock.readyState === WebSocket.OPEN && sock.send(enc.encode(d)));
		t.onBinary((d) => sock.readyState === WebSocket.OPEN && sock.send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
		t.onResize(resize);
		resizeObs = new ResizeObserver(() => fit.fit());
		resizeObs.observe(screen);
	}

	async function open(btn) {
		await guard(btn, async () => {
			const info = await mcp.call('terminal_open', { bot_id: bot, rows: 24, cols: 80 });
			await list(info.id);
		});
	}

	async function close(btn, id) {
		if (!await confirmAction(`Close terminal ${id}?`, ['Its shell and every program started in it end.', 'Its kept output is gone.'], 'Close terminal')) return;
		await guard(btn, async () => {
			await mcp.call('terminal_close', { bot_id: bot, terminal_id: id });
			detach();
			await list();
		});
	}

	async function list(select) {
		const out = await mcp.call('terminal_list', { bot_id: bot });
		const running = (out.terminals || []).filter((t) => t.running !== false);
		clear(picker,
			running.map((t) => h('button', {
				type: 'button',
				class: 'term-pick',
				'aria-pressed': String(t.id === select),
				title: `${t.shell}, started ${ago(t.started_at)}`,
				onclick: () => list(t.id),
			}, `${t.id} (${t.shell})`)),
			h('button', { type: 'button', id: 'term-new', onclick: (e) => open(e.currentTarget) }, 'New terminal'));
		const pick = select || (running[0] && running[0].id);
		if (pick) {
			picker.append(h('button', { type: 'button', id: 'term-close', class: 'danger', onclick: (e) => close(e.currentTarget, pick) }, `Close ${pick}`));
			await attach(pick);
		} else {
			detach();
			state.textContent = 'No terminal open.';
		}
	}

	// Visiting the tab reattaches to a running terminal; it never opens one.
	guard(null, () => list());
	return () => {
		closed = true;
		detach();
	};
}
