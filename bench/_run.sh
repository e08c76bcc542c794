# Shared by bench/run_*.sh: install what is missing, start a throw-away PostgreSQL, migrate,
# then run one benchmark script with its arguments.
#   source bench/_run.sh; run_benchmark "DEBIAN PACKAGES" bench/SCRIPT.py "$@"
run_benchmark() {
  local packages=$1 script=$2
  shift 2
  source scripts/_setup.sh
  # shellcheck disable=SC2086 # a list of package names
  apt_install $packages
  setup_venv requirements-dev.txt
  source scripts/pg_temp.sh
  pg_start
  trap pg_stop EXIT
  export DATABASE_URL=$PG_URL
  .venv/bin/python manage.py migrate --noinput -v 0
  .venv/bin/python "$script" "$@"
}
