"""langsub export --base … --out … --delta …"""
from langsub.export import main

main()
