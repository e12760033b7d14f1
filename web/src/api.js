// The page talks to berth through the endpoints every client uses (MCP on
// /mcp, files on /bots/{bot}/files, the terminal WebSocket); the session
// cookie authenticates it and every non-GET request carries the CSRF token.

// onExpired is called when the server no longer knows the session (it
// expired or berth restarted): the page goes back to its login.
export const session = { me: null, onExpired: () => {} };

// expired reports a 401 on a logged-in page.
export function expired(status) {
	if (status === 401 && session.me) {
		session.me = null;
		session.onExpired();
	}
}

// can says whether the logged-in token holds scope (the server checks it
// again: this only hides controls that would be refused).
export function can(scope) {
	const me = session.me;
	return !!me && (me.admin || (me.scopes || []).includes(scope));
}

export class HTTPError extends Error {
	constructor(status, message) {
		super(message);
		this.status = status;
	}
}

async function failure(res) {
	let text = (await res.text()).trim();
	try {
		const j = JSON.parse(text);
		text = j.error || text;
	} catch { /* plain text */ }
	return new HTTPError(res.status, text || `${res.status} ${res.statusText}`);
}

// request is fetch with the CSRF header on every mutating method and the
// error body turned into an exception.
export async function request(url, opts = {}) {
	const headers = new Headers(opts.headers || {});
	const method = (opts.method || 'GET').toUpperCase();
	if (method !== 'GET' && method !== 'HEAD' && session.me) headers.set('X-Berth-CSRF', session.me.csrf);
	const res = await fetch(url, { ...opts, headers, credentials: 'same-origin' });
	if (!res.ok) {
		if (url !== '/ui/api/me' && url !== '/ui/login') expired(res.status);
		throw await failure(res);
	}
	return res;
}

export async function getJSON(url) {
	return (await request(url)).json();
}

export async function login(token) {
	await request('/ui/login', {
		method: 'POST',
		headers: { 'Content-Type': 'application/json' },
		body: JSON.stringify({ token }),
	});
}

export async function logout() {
	await request('/ui/logout', { method: 'POST' });
	session.me = null;
}

export async function loadMe() {
	try {
		session.me = await getJSON('/ui/api/me');
	} catch (e) {
		if (e.status === 401) session.me = null;
		else throw e;
	}
	return session.me;
}

export function fileURL(bot, path) {
	return `/bots/${encodeURIComponent(bot)}/files?path=${encodeURIComponent(path)}`;
}

export async function upload(bot, path, file) {
	const res = await request(fileURL(bot, path), { method: 'PUT', body: file });
	return res.json();
}
