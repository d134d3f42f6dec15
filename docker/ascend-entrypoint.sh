#!/bin/bash
# Entrypoint of docker/Dockerfile.ascend: the CANN environment for whatever the container runs.
# Prefect's Kubernetes worker passes the command as args (`prefect flow-run execute`).
if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then
    # shellcheck disable=SC1091
    source /usr/local/Ascend/ascend-toolkit/set_env.sh
else
    echo "irv2: /usr/local/Ascend/ascend-toolkit/set_env.sh not found; is BASE a CANN image?" >&2
fi
# the driver is mounted from the node (work pool variable ascend_driver_path)
driver=/usr/local/Ascend/driver
export LD_LIBRARY_PATH="${driver}/lib64:${driver}/lib64/common:${driver}/lib64/driver${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
exec "$@"
