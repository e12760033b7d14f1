// The page's one event stream (/ui/api/events): the latest workspaces
// event and a short history of CPU and memory per bot for the sparklines.
const HISTORY = 60;

class Events {
	constructor() {
		this.src = null;
		this.workspaces = null;
		this.history = new Map(); // bot -> {cpu: [], mem: []}
		this.listeners = new Set();
		this.onClosed = () => {};
	}

	start() {
		this.stop();
		this.src = new EventSource('/ui/api/events');
		// A refused stream (expired session) is closed for good, where a
		// dropped one reconnects by itself: ask whether we are still in.
		this.src.onerror = () => {
			if (this.src && this.src.readyState === EventSource.CLOSED) this.onClosed();
		};
		this.src.addEventListener('workspaces', (ev) => {
			const data = JSON.parse(ev.data);
			this.workspaces = data.workspaces || [];
			this.truncated = !!data.truncated;
			const seen = new Set();
			for (const w of this.workspaces) {
				seen.add(w.bot_id);
				const hst = this.history.get(w.bot_id) || { cpu: [], mem: [] };
				hst.cpu.push(w.cpu_percent || 0);
				hst.mem.push(w.memory_bytes || 0);
				if (hst.cpu.length > HISTORY) hst.cpu.shift();
				if (hst.mem.length > HISTORY) hst.mem.shift();
				this.history.set(w.bot_id, hst);
			}
			for (const bot of this.history.keys()) if (!seen.has(bot)) this.history.delete(bot);
			for (const f of this.listeners) f(this.workspaces);
		});
	}

	stop() {
		if (this.src) this.src.close();
		this.src = null;
		this.workspaces = null;
		this.history.clear();
	}

	// on calls f with every workspaces event (and now, with the last one);
	// returns the function that stops it.
	on(f) {
		this.listeners.add(f);
		if (this.workspaces) f(this.workspaces);
		return () => this.listeners.delete(f);
	}
}

export const events = new Events();
