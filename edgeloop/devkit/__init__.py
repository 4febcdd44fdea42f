"""Scaffolding for the demo, the tests and the benchmarks: real services started as child processes on free
ports (Mosquitto, a hub, a node, Label Studio, a PostgreSQL database), a SIMULATED fleet, the SYNTHETIC
scenarios of the agile loop and a SIMULATED annotator. Not part of a deployment."""
