#!/usr/bin/env bash
# SPDX license headers: adds "SPDX-License-Identifier: Apache-2.0" in its comment syntax to
# every source file that lacks one, or with --check lists those files and exits 1.
#   scripts/spdx.sh           add the missing headers (tracked and new, non-ignored files)
#   scripts/spdx.sh --check   list files without one; exit 1 if any (ctest spdx_headers)
# The header goes on the first line, after a #! line or a Dockerfile parser directive. Data
# and prose (JSON, CSV, Markdown, models, images, archives) are not source and get none.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ID="SPDX-License-Identifier: Apache-2.0"
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# The comment that carries the header in a file of this name, or nothing when the file is
# not source.
comment_for() {
  local path=$1 name first
  name=$(basename "$path")
  name=${name%.in}  # templates take the syntax of what they generate (x.h.in, x.pc.in)
  case "$name" in
    *.md | *.json | *.csv | *.txt.gz | *.pkl | *.h5 | *.keras | *.zip | *.png | *.svg | go.sum \
      | .gitignore | *.dockerignore) return ;;
    CMakeLists.txt) echo "#"; return ;;
    *.txt) return ;;
    *.c | *.h | *.cpp | *.cc | *.hpp)
      IFS= read -r first <"$path" || true
      if [[ "$first" == "/*"* ]]; then echo "/*"; else echo "//"; fi
      return ;;
    *.go | *.fbs | go.mod) echo "//"; return ;;
    *.map) echo "/*"; return ;;
    *.roff | *.[1-8]) echo '.\"'; return ;;
    *.py | *.sh | *.cmake | *.yaml | *.yml | *.toml | *.supp | *.pc | *.service | *.sysusers \
      | *.default | Dockerfile | *.Dockerfile) echo "#"; return ;;
  esac
  IFS= read -r first <"$path" 2>/dev/null || true
  if [[ "$first" == "#!"* ]]; then echo "#"; fi
}

has_header() { head -n 5 "$1" | grep -q "SPDX-License-Identifier:"; }

add_header() {
  local path=$1 comment=$2 line tmp first
  case "$comment" in
    "/*") line="/* $ID */" ;;
    *) line="$comment $ID" ;;
  esac
  tmp=$(mktemp "$path.spdx.XXXXXX")
  IFS= read -r first <"$path" || true
  {
    # After a #! line, or a Dockerfile's parser directive (which must stay first).
    if [[ "$first" == "#!"* || "$first" =~ ^#\ *(syntax|escape|check)= ]]; then
      printf '%s\n%s\n' "$first" "$line"
      tail -n +2 "$path"
    else
      printf '%s\n' "$line"
      # A Go comment touching the package clause would become the package's documentation.
      case "$path" in *.go) printf '\n' ;; esac
      cat "$path"
    fi
  } >"$tmp"
  chmod --reference="$path" "$tmp"
  mv "$tmp" "$path"
}

cd "$ROOT"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git ls-files --cached --others --exclude-standard)
else
  files=$(find . -path ./.git -prune -o -path './build*' -prune -o -type f -print | sed 's|^\./||')
fi
missing=()
while IFS= read -r f; do
  [ -f "$f" ] || continue  # deleted but still in the index
  case "$f" in .ci/*) continue ;; esac  # the CI runner's entry point is not ours to stamp
  comment=$(comment_for "$f")
  [ -n "$comment" ] || continue
  has_header "$f" && continue
  missing+=("$f")
  if [ $check -eq 0 ]; then add_header "$f" "$comment"; fi
done <<<"$files"

if [ $check -eq 1 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "files without an SPDX-License-Identifier line (scripts/spdx.sh adds them):"
    printf '  %s\n' "${missing[@]}"
    exit 1
  fi
  echo "every source file carries an SPDX-License-Identifier line"
else
  echo "added an SPDX header to ${#missing[@]} file(s)"
fi
