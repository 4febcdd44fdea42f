#!/usr/bin/env bash
# "Bring your own model" (docs/tutorials/own-model.md): a model trained elsewhere, as an ONNX file or in an MLflow
# registry, imported, packaged, signed and serving on an edge node (each `## N` is a command a person types).
#
#   own-model.sh SOURCE FEATURES LABELS [MODEL]
#
# SOURCE: a .onnx file, or an MLflow model URI (models:/NAME/VERSION; FROM=the tracking URI of its registry).
# FEATURES: the input columns in order; LABELS: the two classes, negative first. Environment: BROKER (host:port,
# default 127.0.0.1:1883), HUB_PORT (8080), WORK (default ./own-model).
set -euo pipefail
SOURCE=$1; FEATURES=$2; LABELS=$3; MODEL=${4:-their_model}
BROKER=${BROKER:-127.0.0.1:1883}; HUB_PORT=${HUB_PORT:-8080}; WORK=${WORK:-own-model}
[ -f "$SOURCE" ] && SOURCE=$(realpath "$SOURCE")
export EDGELOOP_HUB_URL=http://127.0.0.1:$HUB_PORT
source "$(dirname "$(realpath "$0")")/lib.sh"

## 1: a workspace
mkdir -p "$WORK" && cd "$WORK"
## 2: the model, imported as a new version in the workspace's registry (checked with the nodes' own loader)
if [ -f "$SOURCE" ]; then
  edgeloop model import "$MODEL" --onnx "$SOURCE" --features "$FEATURES" --labels "$LABELS"
else
  edgeloop model import "$MODEL" --mlflow "$SOURCE" ${FROM:+--from-tracking-uri "$FROM"} --features "$FEATURES" --labels "$LABELS"
fi
## 3: a signing key for model bundles
edgeloop keys init --dir keys
## 4: the hub
edgeloop hub serve --port "$HUB_PORT" --broker "$BROKER" --data var/hub --heartbeat 1 > hub.log 2>&1 &
until_file var/hub/admin.token
export EDGELOOP_TOKEN=$(cat var/hub/admin.token)
## 5: packaged (a Bento with onnxruntime or scikit-learn), signed, into the warehouse
edgeloop model package "$MODEL" --version challenger --keys keys
## 6: a node at the hub
NODE_TOKEN=$(edgeloop node create edge-1 --group field)
write_node node "$FEATURES" "$MODEL" "$NODE_TOKEN" && cd node
## 7: the node
edgeloop node run -c node.yaml > node.log 2>&1 &
cd ..
## 8: the model deployed to the node's group
edgeloop model deploy "$MODEL:1" --to group:field
## 9: serving?
until_serving "$MODEL:1"
