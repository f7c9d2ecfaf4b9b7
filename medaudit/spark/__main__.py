"""The entry point for spark-submit: ``screen --engine spark`` on the cluster's master.

    spark-submit --master yarn --py-files medaudit-0.1.0-py3-none-any.whl \
        "$(python -c 'import medaudit.spark.__main__ as m; print(m.__file__)')" \
        /shared/claims/2026-05 --out /shared/findings/2026-05 --rules rules/

(the arguments are those of ``medaudit screen``; the master and memory come from spark-submit).
The folders are paths every node reads the same (a shared filesystem): hdfs:// and s3:// URIs
are not handled yet (the runner checks and writes run.json and rules/ with local file calls)."""

import sys

from medaudit.cli import app

if __name__ == "__main__":
    app(args=["screen", *sys.argv[1:], "--engine", "spark", "--master", ""], prog_name="medaudit")
