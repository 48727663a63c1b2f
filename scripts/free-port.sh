# Sourced by the test and bench scripts: free_port prints a TCP port on
# 127.0.0.1 that nothing listens on, from 20000 to 59999, or fails after 50
# tries.
free_port() {
  local candidate
  for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
