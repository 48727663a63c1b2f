systemctl restart docker-registry
curl -fsS http://127.0.0.1:5000/v2/    # {} from the registry itself
