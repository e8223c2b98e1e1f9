from attn_installer.cli import main

main()
