"""Protocol-exact stand-ins for servers that cannot run on these machines (tests only)."""
