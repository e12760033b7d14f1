// berth console: a single page served at /ui. Hash routes:
//   #/               every workspace (overview)
//   #/w/{bot}/{tab}  one workspace, tab = terminal|files|snapshots|...
import '@xterm/xterm/css/xterm.css';
import 'highlight.js/styles/github.css';
import './app.css';
import { session, loadMe, login, logout } from './api.js';
import { mcp } from './mcp.js';
import { h, clear, notice } from './util.js';
import { events } from './events.js';
import { overview } from './overview.js';
import { workspacePage } from './workspace.js';

const root = document.getElementById('app');
// The current view's cleanup (closing its WebSocket, timers, listeners).
let teardown = () => {};

function loginPage(error) {
	const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
	const err = h('p', { class: 'error', role: 'alert', id: 'login-error' }, error || '');
	const form = h('form', {
		class: 'login',
		onsubmit: async (ev) => {
			ev.preventDefault();
			const btn = form.querySelector('button');
			btn.disabled = true;
			try {
				await login(input.value.trim());
				input.value = '';
				await start();
			} catch (e) {
				err.textContent = e.status === 401 ? 'That token is not valid.' : e.message;
				btn.disabled = false;
				input.focus();
			}
		},
	},
	h('h1', {}, 'berth console'),
	h('label', { for: 'token' }, 'Token'),
	input,
	h('p', { class: 'hint' }, 'A berth token: the admin token or a scoped one. The page keeps a session cookie, not the token.'),
	err,
	h('button', { type: 'submit', class: 'primary' }, 'Log in'));
	clear(root, h('main', { class: 'center' }, form));
	input.focus();
}

function shell() {
	const me = session.me;
	const scopes = me.admin ? 'admin' : (me.scopes || []).join(', ');
	return h('div', { class: 'shell' },
		h('a', { class: 'skip', href: '#main' }, 'Skip to content'),
		h('header', { class: 'top' },
			h('a', { class: 'brand', href: '#/' }, 'berth'),
			h('nav', { 'aria-label': 'Main' }, h('a', { href: '#/' }, 'Workspaces')),
			h('span', { class: 'who', title: `scopes: ${scopes}` }, me.identity, h('small', {}, ` (${scopes})`)),
			h('button', {
				type: 'button',
				id: 'logout',
				onclick: async () => {
					try {
						await logout();
					} catch (e) {
						notice(e.message, true);
						return;
					}
					expire('');
				},
			}, 'Log out')),
		h('p', { id: 'notice', class: 'notice', role: 'status', 'aria-live': 'polite' }),
		h('main', { id: 'main', tabindex: '-1' }));
}

function route() {
	if (!session.me) return;
	teardown();
	teardown = () => {};
	const main = document.getElementById('main');
	const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
	if (parts[0] === 'w' && parts[1]) {
		teardown = workspacePage(main, parts[1], parts[2] || 'terminal') || (() => {});
	} else {
		teardown = overview(main) || (() => {});
	}
}

async function start() {
	const me = await loadMe();
	if (!me) {
		loginPage();
		return;
	}
	mcp.reset();
	clear(root, shell());
	events.start();
	route();
}

function expire(why = 'The session ended: log in again.') {
	events.stop();
	mcp.reset();
	teardown();
	teardown = () => {};
	loginPage(why);
}
session.onExpired = () => expire();
events.onClosed = async () => {
	if (session.me && !(await loadMe().catch(() => session.me))) expire();
};

window.addEventListener('hashchange', route);
start().catch((e) => loginPage(e.message));
