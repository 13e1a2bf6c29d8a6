# Sourced by .ci/run: the tests marked `readonly` (a read-only folder must give a one-line error) as a user
# without root's power to write anywhere, against the same virtual environment and clone.
CI_USER=${CI_USER:-tuning-ci}

# Give $CI_USER search (x) permission on every folder above $1 that lacks it for others, so it can reach the
# clone (e.g. under /root); nothing is made readable or writable that was not.
_open_path_to() {
  local dir
  dir=$(cd "$1" && pwd -P)
  while [ "$dir" != "/" ]; do
    if [ -z "$(find "$dir" -maxdepth 0 -perm -o=x)" ]; then
      echo "note: chmod o+x $dir so $CI_USER can reach the clone" >&2
      chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
  done
}

run_readonly_tests() {
  local python=.venv/bin/python log
  log=$(mktemp)
  if [ "$(id -u)" -eq 0 ]; then
    id -u "$CI_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$CI_USER"
    _open_path_to .
    _open_path_to "$(readlink -f .venv)"  # may be a link to a venv elsewhere
    _open_path_to "$(dirname "$(readlink -f "$python")")"  # the interpreter it was made from (e.g. pyenv's)
    local home
    home=$(getent passwd "$CI_USER" | cut -d: -f6)
    # Its own HOME (Keras and matplotlib write settings there) and TMPDIR (pytest's tmp_path); no cache in the clone.
    runuser -u "$CI_USER" -- env HOME="$home" TMPDIR="$(runuser -u "$CI_USER" -- mktemp -d)" \
      "$python" -m pytest -m readonly -p no:cacheprovider -q -rs 2>&1 | tee "$log"
  else
    "$python" -m pytest -m readonly -p no:cacheprovider -q -rs 2>&1 | tee "$log"
  fi
  if grep -qE '[0-9]+ skipped' "$log" || ! grep -qE '[0-9]+ passed' "$log"; then
    echo "error: not every test marked readonly ran and passed (see above); CI fails rather than skip them" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
