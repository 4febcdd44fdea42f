"""EdgeLoop's edge runtime: devices, pipelines, engine, node.

Small by design: it must never import Prefect, MLflow or DVC.
"""

__version__ = "0.1.0"
