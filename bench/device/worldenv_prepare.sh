#!/usr/bin/env bash
# Prepares the two git-ignored folders that bench/device/worldenv_64.sh needs carried to the device machine (whose
# python3.12 has torch but no MuJoCo, Meta-World, gymnasium, hydra, open_clip or diffusers, and no registry):
#   .gl   the Debian EGL/GL/Vulkan loader packages (the device notes' list), unpacked there with dpkg -x;
#   .whl  py3.12 x86-64 wheels, --no-deps, one version each: the versions this repo's environment runs; Meta-World's
#         wheel (37 MB) is re-packed without the 25 textures that none of its XML files names (12 MB: the tree and
#         carry must stay under 64 MiB; the three tasks' frames were compared pixel for pixel, identical);
#         antlr4-python3-runtime 4.9.3 (hydra's pin) exists only as an sdist, so its wheel is built here.
# Run from the root of the checkout the device tool sends (for a helper: the lead's checkout), then
#   run(command="bash bench/device/worldenv_64.sh", carry=[".whl", ".gl"], timeout_s=580)
#   bash bench/device/worldenv_prepare.sh [ROOT]      # ROOT: where .whl and .gl go (default: the repo root)
set -euo pipefail
root=${1:-$(git rev-parse --show-toplevel)}
common=$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
if [ -n "$common" ]; then  # ignored, so they travel only when carried
  mkdir -p "$common/info"
  for p in /.whl/ /.gl/; do grep -qxF "$p" "$common/info/exclude" 2>/dev/null || echo "$p" >> "$common/info/exclude"; done
fi
mkdir -p "$root/.whl" "$root/.gl" /tmp/amd64/partial

o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
# shellcheck disable=SC2086
apt-get $o update >/dev/null
# shellcheck disable=SC2086
(cd "$root/.gl" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>/dev/null)

dl() {  # dl DIR NAME==VERSION...: py3.12 x86-64 wheels without their dependencies
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
dl "$root/.whl" mujoco==3.3.0 hydra-core==1.3.8 omegaconf==2.3.1 glfw==2.11.0 PyOpenGL==3.1.10 \
  farama-notifications==0.0.6 gymnasium==1.4.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0 diffusers==0.42.1
python3 -m pip wheel -q --no-deps -w "$root/.whl" antlr4-python3-runtime==4.9.3

tmp=$(mktemp -d)
dl "$tmp" metaworld==3.1.1
(cd "$tmp" && mkdir x && cd x && unzip -q ../metaworld-3.1.1-py3-none-any.whl && python3 - <<'EOF'
import glob, os, re
xml = glob.glob("metaworld/assets/**/*.xml", recursive=True)
named = {os.path.basename(m) for f in xml for m in re.findall(r'file="([^"]+)"', open(f).read())}
gone = [f for f in glob.glob("metaworld/assets/**/*", recursive=True)
        if os.path.isfile(f) and not f.endswith(".xml") and os.path.basename(f) not in named]
for f in gone:
    os.remove(f)
rec = "metaworld-3.1.1.dist-info/RECORD"
keep = [line for line in open(rec) if line.split(",")[0] not in set(gone)]
open(rec, "w").writelines(keep)
print(f"metaworld: {len(gone)} files no XML names removed")
EOF
zip -q -r -9 "$root/.whl/metaworld-3.1.1-py3-none-any.whl" metaworld metaworld-3.1.1.dist-info)
rm -rf "$tmp"
ls -la "$root/.whl" "$root/.gl"
tree=$(cd "$root" && { git ls-files -co --exclude-standard -z 2>/dev/null || true; } | du -cb --files0-from=- | tail -1 | cut -f1)
carry=$(du -cb "$root/.whl" "$root/.gl" | tail -1 | cut -f1)
echo "tree $((tree / 1048576)) MiB + carry $((carry / 1048576)) MiB (limit 64 MiB)"
