#!/usr/bin/env node
// validate-answers.js - every answer the tests received from the service,
// checked against the OpenAPI document (api/openapi.json): its status is one
// the operation lists (or its `default`), its content type the response's, its
// body valid against the response's schema. An answer to a path or method the
// document does not have must be problem details (a 404 or 405).
//
//   node validate-answers.js DIR
//
// DIR holds what tests/lib/harness.sh's api() kept: N.meta (method, path,
// status, content type, tab-separated) and N.body. Prints each mismatch and
// a summary; exits 1 on any mismatch.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..', '..');
const Ajv2020 = require(path.join(root, 'tools/lint/node_modules/ajv/dist/2020')).default;
const addFormats = require(path.join(root, 'tools/lint/node_modules/ajv-formats')).default;

const doc = JSON.parse(fs.readFileSync(path.join(root, 'api/openapi.json'), 'utf8'));
const ajv = new Ajv2020({ strict: false, allErrors: false });
addFormats(ajv);
ajv.addSchema(doc, 'openapi.json');

const validators = new Map();
function validatorFor(pointer) {
  if (!validators.has(pointer)) validators.set(pointer, ajv.compile({ $ref: 'openapi.json#' + pointer }));
  return validators.get(pointer);
}
const esc = (s) => s.replace(/~/g, '~0').replace(/\//g, '~1');
function deref(obj) {
  while (obj && obj.$ref) obj = obj.$ref.slice(2).split('/').reduce((o, k) => o[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
  return obj;
}

// Templates, the literal ones first (/v1/jobs before /v1/jobs/{id}).
const templates = Object.keys(doc.paths)
  .map((t) => ({ t, re: new RegExp('^' + t.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+') + '$'), vars: (t.match(/\{/g) || []).length }))
  .sort((a, b) => a.vars - b.vars);

function check(method, rawPath, status, ctype, body) {
  const p = rawPath.split('?')[0];
  const media = (ctype || '').split(';')[0].trim();
  const tpl = templates.find((x) => x.re.test(p));
  const op = tpl && doc.paths[tpl.t][method.toLowerCase()];
  let resp, pointer;
  if (!op) {
    if (media !== 'application/problem+json') return `not in the document, and not problem details (${media})`;
    pointer = '/components/schemas/Problem';
  } else {
    const key = op.responses[status] ? status : op.responses.default ? 'default' : null;
    if (!key) return `status ${status} is not one of ${Object.keys(op.responses).join(', ')}`;
    resp = deref(op.responses[key]);
    const content = resp.content || {};
    if (!content[media]) return `content type ${media || 'none'} is not one of ${Object.keys(content).join(', ') || 'none'}`;
    pointer = (op.responses[key].$ref ? op.responses[key].$ref.slice(1) : `/paths/${esc(tpl.t)}/${method.toLowerCase()}/responses/${key}`) +
      `/content/${esc(media)}/schema`;
  }
  if (!media.endsWith('json')) return null;
  let value;
  try {
    value = JSON.parse(body);
  } catch (e) {
    return `the body is not JSON: ${body.slice(0, 120)}`;
  }
  const v = validatorFor(pointer);
  if (!v(value)) return `the body does not match ${pointer}: ${ajv.errorsText(v.errors)}; body ${body.slice(0, 300)}`;
  return null;
}

const dir = process.argv[2];
let n = 0, bad = 0;
for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.meta')).sort()) {
  const [method, rawPath, status, ctype] = fs.readFileSync(path.join(dir, f), 'utf8').replace(/\n$/, '').split('\t');
  if (status === '000' || method === 'HEAD') continue;
  const body = fs.readFileSync(path.join(dir, f.replace(/\.meta$/, '.body')), 'utf8');
  n++;
  const why = check(method, rawPath, status, ctype, body);
  if (why) {
    bad++;
    if (bad <= 20) console.log(`${method} ${rawPath} -> ${status}: ${why}`);
  }
}
console.log(`${n} answers checked against api/openapi.json, ${bad} outside it`);
process.exit(bad ? 1 : 0);
