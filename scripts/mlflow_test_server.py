"""An MLflow tracking server for the tests: MLflow's own Flask app (its REST
handlers, the ones `mlflow server` serves) on a free local port, with a SQLite
backend and the artifact proxy (`--serve-artifacts`) under STORE_DIR.

    .venv/bin/python scripts/mlflow_test_server.py STORE_DIR

Prints `port N` once the server answers, then serves until killed. Needs
flask, sqlalchemy and alembic beside mlflow-skinny (scripts/setup.sh installs
them).
"""

import os
import socket
import sys
import threading
import urllib.request


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: mlflow_test_server.py STORE_DIR")
    store = os.path.abspath(sys.argv[1])
    os.makedirs(store, exist_ok=True)
    from mlflow.server import constants as c

    # The environment `mlflow server --backend-store-uri sqlite:///... --serve-artifacts`
    # gives its app (mlflow/server/__init__.py's _run_server).
    backend = f"sqlite:///{store}/mlflow.db"
    os.environ[c.BACKEND_STORE_URI_ENV_VAR] = backend
    os.environ[c.SERVE_ARTIFACTS_ENV_VAR] = "true"
    os.environ[c.ARTIFACTS_DESTINATION_ENV_VAR] = os.path.join(store, "artifacts")
    os.environ[c.ARTIFACT_ROOT_ENV_VAR] = "mlflow-artifacts:/"
    from mlflow.server import app
    from mlflow.server.handlers import initialize_backend_stores

    initialize_backend_stores(backend, None, "mlflow-artifacts:/")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).read()
    print(f"port {port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
