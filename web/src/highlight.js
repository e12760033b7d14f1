// Syntax colouring with highlight.js's core and a few common languages
// (the full set would triple the bundle).
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import css from 'highlight.js/lib/languages/css';
import go from 'highlight.js/lib/languages/go';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import markdown from 'highlight.js/lib/languages/markdown';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';
import ini from 'highlight.js/lib/languages/ini';
import dockerfile from 'highlight.js/lib/languages/dockerfile';
import c from 'highlight.js/lib/languages/c';

const langs = { bash, css, go, javascript, json, markdown, python, rust, typescript, xml, yaml, ini, dockerfile, c };
for (const [name, def] of Object.entries(langs)) hljs.registerLanguage(name, def);

const byExt = {
	sh: 'bash', bash: 'bash', css: 'css', go: 'go', js: 'javascript', mjs: 'javascript', cjs: 'javascript', json: 'json',
	md: 'markdown', py: 'python', rs: 'rust', ts: 'typescript', html: 'xml', xml: 'xml', svg: 'xml', yml: 'yaml',
	yaml: 'yaml', toml: 'ini', ini: 'ini', conf: 'ini', c: 'c', h: 'c',
};

// Past this size colouring costs more than it helps.
const MAX = 256 << 10;

// highlight fills el with text, coloured by the language its name implies
// (plain text when none). hljs escapes the text it emits.
export function highlight(el, text, name) {
	const lower = name.toLowerCase();
	const lang = lower === 'dockerfile' ? 'dockerfile' : byExt[lower.split('.').pop()];
	if (!lang || text.length > MAX) {
		el.textContent = text;
		return;
	}
	el.innerHTML = hljs.highlight(text, { language: lang, ignoreIllegals: true }).value;
	el.classList.add('hljs');
}
