#!/usr/bin/env bash
# Start the class's JupyterHub as root: deploy/start_hub.sh [/etc/lora-class/class.json]
# (deploy/install_class.py setup writes class.json; the systemd unit deploy/lora-hub.service runs this.)
# The hub runs from the course's environment, in its state folder (root's, 0700), on 127.0.0.1 only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LORA_CLASS_CONFIG=${1:-/etc/lora-class/class.json}
[ "$(id -u)" = 0 ] || { echo "start_hub.sh: run as root (the hub starts each user's server as that user)" >&2; exit 2; }
[ -r "$LORA_CLASS_CONFIG" ] || { echo "start_hub.sh: no $LORA_CLASS_CONFIG: run deploy/install_class.py setup first" >&2; exit 2; }
read -r venv state < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["venv"], c["state"])' "$LORA_CLASS_CONFIG")
cd "$state"
exec "$venv/bin/jupyterhub" -f "$here/jupyterhub_config.py"
