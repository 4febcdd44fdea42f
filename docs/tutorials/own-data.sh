#!/usr/bin/env bash
# "Start from your own data" (docs/tutorials/own-data.md): a CSV of labelled telemetry to a first model serving on an
# edge node, in twelve commands (each `## N` below is one a person types; the rest waits or writes a file).
#
#   own-data.sh EXPORT.csv FEATURES [MODEL]
#
# EXPORT.csv: columns ts (epoch seconds), device, the FEATURES (comma-separated names) and label (normal or
# anomaly; empty when unlabelled). Environment: BROKER (host:port of an MQTT broker, default 127.0.0.1:1883),
# HUB_PORT (8080), WORK (the folder to work in, default ./own-data), PIP_INSTALL (how the model package is
# installed, default "pip install -e"; the test installs it into a folder of its own).
set -euo pipefail
CSV=$(realpath "$1"); FEATURES=$2; MODEL=${3:-my_model}
BROKER=${BROKER:-127.0.0.1:1883}; HUB_PORT=${HUB_PORT:-8080}; WORK=${WORK:-own-data}
PIP_INSTALL=${PIP_INSTALL:-pip install -q --no-build-isolation -e}
export EDGELOOP_HUB_URL=http://127.0.0.1:$HUB_PORT
source "$(dirname "$(realpath "$0")")/lib.sh"

## 1: a workspace
mkdir -p "$WORK" && cd "$WORK" && echo "seed: 0" > params.yaml
## 2: your model, scaffolded into the workspace
edgeloop model init "$MODEL" --kind tabular --features "$FEATURES" --labels normal,anomaly --dir pkgs -w .
## 3: installed (its entry point is how EdgeLoop finds it)
$PIP_INSTALL "pkgs/$MODEL"
## 4: your data, as field data
cp "$CSV" "data/field/$MODEL/"
## 5: trained, evaluated on holdouts split from your labels by time and device, registered in MLflow
edgeloop model train "$MODEL"
## 6: a signing key for model bundles
edgeloop keys init --dir keys
## 7: the hub (API, warehouse, MQTT ingest)
edgeloop hub serve --port "$HUB_PORT" --broker "$BROKER" --data var/hub --heartbeat 1 > hub.log 2>&1 &
until_file var/hub/admin.token
export EDGELOOP_TOKEN=$(cat var/hub/admin.token)
## 8: packaged (BentoML), signed, into the hub's warehouse
edgeloop model package "$MODEL" --keys keys
## 9: a node at the hub
NODE_TOKEN=$(edgeloop node create edge-1 --group field)
# the node's configuration (lib.sh): your devices publish JSON readings on sensors/<device>; each is scored and uploaded
write_node node "$FEATURES" "$MODEL" "$NODE_TOKEN" && cd node
## 10: the node
edgeloop node run -c node.yaml > node.log 2>&1 &
cd ..
## 11: the model deployed to the node's group
edgeloop model deploy "$MODEL:1" --to group:field
## 12: serving? (the node reports the version it runs)
until_serving "$MODEL:1"
