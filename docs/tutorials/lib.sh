# What the tutorials share: waiting, and a node's configuration (not commands a person types).

until_file() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.2; done; echo "no $1" >&2; return 1; }

# write_node DIR FEATURES MODEL NODE_TOKEN: node.yaml, products, devices and a pipeline (device_input ->
# apply_model -> upload) for one device publishing JSON readings on sensors/unit-1, in DIR
write_node() {
  mkdir -p "$1"
  (cd "$1" && python - "$2" "$3" <<'PY'
import sys, yaml
features, model = sys.argv[1].split(","), sys.argv[2]
yaml.safe_dump({"products": [{"name": "sensor", "properties": {f: {"type": "number"} for f in features}}]},
               open("products.yaml", "w"))
yaml.safe_dump({"devices": [{"id": "unit-1", "product": "sensor", "connector": "mqtt", "topic": "sensors/unit-1",
                             "ts_field": "ts"}]}, open("devices.yaml", "w"))
yaml.safe_dump({"name": "score", "product": "sensor", "steps": [
    {"device_input": {}}, {"apply_model": {"model": model, "inputs": features, "output": "anomaly"}},
    {"upload": {}}]}, open("score.yaml", "w"))
PY
  )
  cat > "$1/node.yaml" <<YAML
node: edge-1
broker: {host: ${BROKER%:*}, port: ${BROKER#*:}}
store: {path: node.db}
products: [products.yaml]
devices: [devices.yaml]
pipelines: [{instance: score, pipeline: score.yaml}]
models: {store: models, trusted_keys: [../keys/signing.pub]}
hub: {url: $EDGELOOP_HUB_URL, token: $4, heartbeat: 1}
outbox: {path: outbox.db}
YAML
}

# until_serving NAME:VERSION: wait (60 s) for the hub to list a node serving it
until_serving() {
  local check='import json, sys
name, version = sys.argv[1].rsplit(":", 1)
nodes = json.load(sys.stdin)
sys.exit(0 if any(str(((n.get("models") or {}).get("models") or {}).get(name, {}).get("active")) == version
                  for n in nodes) else 1)'
  for _ in $(seq 300); do
    if edgeloop node ls --json 2>/dev/null | python -c "$check" "$1"; then edgeloop node ls; return 0; fi
    sleep 0.2
  done
  echo "the node does not serve $1 after 60 s: see node/node.log; the hub says:" >&2
  edgeloop node ls >&2 || true
  return 1
}
