#!/usr/bin/env node
// openapi.js - api/openapi.yaml (the source, edited by hand) -> api/openapi.json
// (what the service serves at /v1/openapi.json and the tests validate against).
//   node tools/openapi.js          writes api/openapi.json
//   node tools/openapi.js --check  exits 1 when api/openapi.json is stale
'use strict';
const fs = require('fs');
const path = require('path');
const yaml = require(path.join(__dirname, 'lint/node_modules/js-yaml'));

const root = path.join(__dirname, '..');
const src = path.join(root, 'api/openapi.yaml');
const out = path.join(root, 'api/openapi.json');
const json = JSON.stringify(yaml.load(fs.readFileSync(src, 'utf8')), null, 1) + '\n';
if (process.argv.includes('--check')) {
  const have = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
  if (have !== json) {
    console.error('api/openapi.json is stale: run make openapi (node tools/openapi.js)');
    process.exit(1);
  }
} else {
  fs.writeFileSync(out, json);
}
