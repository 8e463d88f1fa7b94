#!/usr/bin/env bash
# Writes .dvc/plots/offline.html: the page `dvc plots show` fills (.dvc/config: plots.html_template), with Vega,
# Vega-Lite and Vega-Embed inlined instead of loaded from a CDN, so the plots render without internet. The versions are
# the ones dvc-render's own page loads; all three are BSD-3-Clause, their licence texts are kept in the page. Needs npm
# (its registry) once; the page is committed, so clones need neither.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.dvc/plots/offline.html
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null)
for package in vega-5.20.2 vega-lite-5.2.0 vega-embed-6.18.2; do
    mkdir -p "$tmp/$package" && tar xzf "$tmp/$package.tgz" -C "$tmp/$package"
done
mkdir -p "$(dirname "$out")"
python3 - "$tmp" "$out" <<'PY'
import sys
from pathlib import Path

tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
scripts = []
for package, bundle in (("vega-5.20.2", "vega"), ("vega-lite-5.2.0", "vega-lite"), ("vega-embed-6.18.2", "vega-embed")):
    root = tmp / package / "package"
    code = (root / "build" / f"{bundle}.min.js").read_text()
    licence = (root / "LICENSE").read_text().replace("*/", "* /")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):  # dvc-render fills these by text replacement
        assert placeholder not in code, (bundle, placeholder)
    assert "</script" not in code.lower(), bundle  # would end the inline script early
    scripts.append(f"<script>/*! {bundle} ({package}), BSD-3-Clause:\n{licence}*/\n{code}</script>")
page = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vendored by scripts/vendor_vega.sh: no CDN, works offline -->
    %s
    <style>
        table { border-spacing: 15px; }
        body { font-family: system-ui, sans-serif; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
""" % "\n".join(scripts)
out.write_text(page)
print(f"{out}: {out.stat().st_size / 1e3:.0f} kB")
PY
