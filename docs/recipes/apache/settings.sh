# What this host's deployment chooses. Paste it first, edited, into a root
# shell in a checkout of this repository; the later steps read these variables
# and the files under deploy/.
name=registry.example.com # the registry's name, as clients write it and its certificate names it
listen_addr='*'           # Apache's address: * is every interface; one IP address keeps it to that one
pipelines=10.0.0.0/8      # who may mint credentials: IP addresses or CIDR ranges, separated by spaces
