"""`python -m sd_webui.worker`: the same as the `sd-worker` command."""

from sd_webui.worker.cli import main

main()
