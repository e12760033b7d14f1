// DOM and formatting helpers shared by the views.

// h builds an element: h('button', {class: 'x', onclick: f}, 'text', child).
// Text is always set as text, never parsed as HTML.
export function h(tag, attrs = {}, ...children) {
	const el = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === undefined || v === null || v === false) continue;
		if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
		else if (k === 'class') el.className = v;
		else if (k === 'text') el.textContent = v;
		else if (k in el && typeof v !== 'string') el[k] = v;
		else el.setAttribute(k, v === true ? '' : v);
	}
	add(el, children);
	return el;
}

function add(el, children) {
	for (const c of children) {
		if (c === undefined || c === null || c === false) continue;
		if (Array.isArray(c)) add(el, c);
		else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
	}
}

export function clear(el, ...children) {
	el.replaceChildren();
	add(el, children);
	return el;
}

export function bytes(n) {
	if (n === undefined || n === null) return '–';
	const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
	let i = 0;
	let v = Number(n);
	while (v >= 1024 && i < units.length - 1) {
		v /= 1024;
		i++;
	}
	return `${i ? v.toFixed(v < 10 ? 1 : 0) : v} ${units[i]}`;
}

export function ago(t) {
	if (!t) return '–';
	const d = new Date(t);
	if (Number.isNaN(d.getTime()) || d.getFullYear() < 2000) return '–';
	const s = Math.round((Date.now() - d.getTime()) / 1000);
	if (s < 60) return `${Math.max(s, 0)} s ago`;
	if (s < 3600) return `${Math.round(s / 60)} min ago`;
	if (s < 86400) return `${Math.round(s / 3600)} h ago`;
	return d.toLocaleDateString();
}

export function when(t) {
	if (!t) return '–';
	const d = new Date(t);
	return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

// notice shows a short message in the page's status line (role=status, so
// screen readers announce it); errors stay until the next message.
export function notice(msg, isError = false) {
	const el = document.getElementById('notice');
	if (!el) return;
	el.textContent = msg;
	el.className = isError ? 'notice error' : 'notice';
	clearTimeout(el._t);
	if (!isError) el._t = setTimeout(() => { el.textContent = ''; }, 5000);
}

// guard runs an action from a control, disabling it meanwhile and showing
// a failure instead of throwing it away.
export async function guard(control, fn) {
	if (control) control.disabled = true;
	try {
		return await fn();
	} catch (e) {
		notice(e.message || String(e), true);
		return undefined;
	} finally {
		if (control) control.disabled = false;
	}
}

// modal opens a <dialog> with a form; resolves with the form's values on
// OK, null on cancel. body is extra content (a message, inputs).
function modal(title, body, okLabel, danger) {
	return new Promise((resolve) => {
		const ok = h('button', { type: 'submit', value: 'ok', class: danger ? 'danger' : 'primary' }, okLabel);
		const form = h('form', { method: 'dialog' },
			h('h2', {}, title),
			body,
			h('div', { class: 'actions' },
				h('button', { type: 'submit', value: 'cancel', formnovalidate: true }, 'Cancel'),
				ok));
		const dlg = h('dialog', { class: 'modal', 'aria-label': title }, form);
		dlg.addEventListener('close', () => {
			const vals = dlg.returnValue === 'ok' ? Object.fromEntries(new FormData(form)) : null;
			dlg.remove();
			resolve(vals);
		});
		document.body.append(dlg);
		dlg.showModal();
		(form.querySelector('input') || ok).focus();
	});
}

// confirm asks before an action that loses something; lost says what.
export async function confirmAction(title, lost, okLabel) {
	const list = Array.isArray(lost) ? h('ul', {}, lost.map((l) => h('li', {}, l))) : h('p', {}, lost);
	return (await modal(title, list, okLabel, true)) !== null;
}

export async function ask(title, label, value = '', okLabel = 'OK') {
	const vals = await modal(title, h('label', { class: 'field' }, label, h('input', { name: 'v', value, required: true, autocomplete: 'off' })), okLabel, false);
	return vals ? vals.v : null;
}

const svgNS = 'http://www.w3.org/2000/svg';

// sparkline draws the values (oldest first) as a small line, scaled to max
// (or to the largest value when max is not given).
export function sparkline(values, max, label) {
	const w = 100;
	const hgt = 24;
	const svg = document.createElementNS(svgNS, 'svg');
	svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
	svg.setAttribute('class', 'spark');
	svg.setAttribute('role', 'img');
	svg.setAttribute('aria-label', label);
	const top = max || Math.max(1, ...values);
	const n = values.length;
	if (n > 1) {
		const pts = values.map((v, i) => `${((i / (n - 1)) * w).toFixed(1)},${(hgt - 1 - (Math.min(v, top) / top) * (hgt - 2)).toFixed(1)}`);
		const line = document.createElementNS(svgNS, 'polyline');
		line.setAttribute('points', pts.join(' '));
		svg.append(line);
	}
	return svg;
}
