#!/usr/bin/env bash
# Generates the reflection-free Marshal/Unmarshal/Size methods
# (*_vtproto.pb.go) beside the generated code.
#
# The .proto files use edition 2023 (see memdb/v1/types.proto for why),
# which protoc-gen-go-vtproto cannot read. With field presence IMPLICIT and
# UTF-8 validation off on every file, edition 2023 means exactly what
# proto3 means for the Go structs and the wire format, and the plugin does
# not validate UTF-8 in either. So the plugin reads a proto3 rendering of
# the same files, made here in a temporary directory; the tests in
# api/codec check that both encoders agree on the bytes.
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BIN:-../../bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp buf.yaml "$tmp/"
for f in $(find memdb -name '*.proto'); do
  mkdir -p "$tmp/$(dirname "$f")"
  # Only file-level features are allowed here: a field-level one would
  # change meaning in the proto3 rendering.
  if grep -n 'features\.' "$f" | grep -v ':option features\.\(field_presence = IMPLICIT\|utf8_validation = NONE\);$' >/dev/null; then
    echo "vtgen: $f sets features the proto3 rendering cannot express" >&2
    exit 1
  fi
  sed -e 's/^edition = "2023";$/syntax = "proto3";/' -e '/^option features\./d' "$f" >"$tmp/$f"
done
plugin=$(cd "$BIN" && pwd)/protoc-gen-go-vtproto
cat >"$tmp/buf.gen.yaml" <<YAML
version: v2
plugins:
  - local: $plugin
    out: .
    opt:
      - paths=source_relative
      - features=marshal+unmarshal+size
YAML
(cd "$tmp" && "$(cd "$BIN" && pwd)/buf" generate)
(cd "$tmp" && find memdb -name '*_vtproto.pb.go') | while read -r g; do cp "$tmp/$g" "$g"; done
