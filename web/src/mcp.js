// A small MCP client for berth's streamable HTTP endpoint: initialize,
// keep the Mcp-Session-Id, then tools/call. A POST's answer is either
// application/json or a text/event-stream whose events carry JSON-RPC
// messages (progress notifications, then the response).
import { session, HTTPError, expired } from './api.js';

const PROTOCOL = '2025-11-25';

class ToolError extends Error {}

class Client {
	constructor() {
		this.sid = null;
		this.nextID = 1;
		this.starting = null;
	}

	async post(body, withSession = true) {
		const headers = {
			'Content-Type': 'application/json',
			Accept: 'application/json, text/event-stream',
			'X-Berth-CSRF': session.me ? session.me.csrf : '',
		};
		if (withSession && this.sid) {
			headers['Mcp-Session-Id'] = this.sid;
			headers['MCP-Protocol-Version'] = PROTOCOL;
		}
		const res = await fetch('/mcp', { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin' });
		if (!res.ok && res.status !== 202) {
			expired(res.status);
			const text = (await res.text()).trim();
			throw new HTTPError(res.status, text || `${res.status} ${res.statusText}`);
		}
		return res;
	}

	// answer finds the response to id in a JSON or event-stream body; the
	// stream's progress notifications go to onProgress.
	static async answer(res, id, onProgress) {
		const type = res.headers.get('Content-Type') || '';
		if (type.startsWith('application/json')) return res.json();
		if (!type.startsWith('text/event-stream')) throw new Error(`unexpected answer type ${type || '(none)'}`);
		const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
		let buf = '';
		for (;;) {
			const { value, done } = await reader.read();
			if (value) buf += value.replace(/\r\n/g, '\n');
			let end;
			while ((end = buf.indexOf('\n\n')) >= 0) {
				const block = buf.slice(0, end);
				buf = buf.slice(end + 2);
				const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
				if (!data) continue;
				const msg = JSON.parse(data);
				if (msg.method === 'notifications/progress' && onProgress && msg.params && msg.params.progressToken === id) onProgress(msg.params);
				if (msg.id === id && ('result' in msg || 'error' in msg)) {
					reader.cancel().catch(() => {});
					return msg;
				}
			}
			if (done) throw new Error('the event stream ended without an answer');
		}
	}

	async rpc(method, params, withSession = true, onProgress = null) {
		const id = this.nextID++;
		// The request id doubles as the progress token.
		const p = onProgress ? { ...params, _meta: { progressToken: id } } : params;
		const res = await this.post({ jsonrpc: '2.0', id, method, params: p }, withSession);
		return { res, msg: await Client.answer(res, id, onProgress) };
	}

	async start() {
		this.sid = null;
		const { res, msg } = await this.rpc('initialize', {
			protocolVersion: PROTOCOL,
			capabilities: {},
			clientInfo: { name: 'berth-console', version: '1' },
		}, false);
		if (msg.error) throw new Error(msg.error.message);
		this.sid = res.headers.get('Mcp-Session-Id');
		await this.post({ jsonrpc: '2.0', method: 'notifications/initialized' });
	}

	ready() {
		if (!this.starting) {
			this.starting = this.start().catch((e) => {
				this.starting = null;
				throw e;
			});
		}
		return this.starting;
	}

	// call runs a tool and returns its structured result; a tool error
	// (isError) or a JSON-RPC error is thrown with its message. With
	// onProgress, the call asks for progress notifications and passes each
	// one's params ({progress, total, message}) on.
	async call(name, args, onProgress = null) {
		await this.ready();
		let out;
		try {
			out = await this.rpc('tools/call', { name, arguments: args }, true, onProgress);
		} catch (e) {
			// The server forgot the session (restart, expiry): start anew once.
			if (!(e instanceof HTTPError && e.status === 404)) throw e;
			this.starting = null;
			await this.ready();
			out = await this.rpc('tools/call', { name, arguments: args }, true, onProgress);
		}
		const { msg } = out;
		if (msg.error) throw new ToolError(msg.error.message);
		const r = msg.result || {};
		const text = (r.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
		if (r.isError) throw new ToolError(text || `${name} failed`);
		return r.structuredContent ?? { text };
	}

	reset() {
		this.sid = null;
		this.starting = null;
	}
}

export const mcp = new Client();
