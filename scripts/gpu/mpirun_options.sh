# mpirun_options.sh: the options both scripts give Open MPI's mpirun for ranks on one machine, sourced
# by scripts/gpu_check.sh (the device's two ranks) and scripts/gpu_package.sh (the bundle's check), so
# that the check here guards what the device runs: as root in a container, no CPU binding, no
# cross-memory attach (often refused in containers), the ob1 layer over plain shared memory and TCP
# (the bundle's UCX and verbs would find no network there), the bundle's libraries for the ranks, and
# the local-only launcher: Open MPI 4.1's default one refuses to start, even for ranks on this machine,
# when it finds no ssh or rsh (a bare GPU image may have neither).
# shellcheck disable=SC2034  # used by the scripts that source this
mpirun_options=(--allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none
                --mca pml ob1 --mca btl self,vader,tcp --mca plm isolated -x LD_LIBRARY_PATH)
