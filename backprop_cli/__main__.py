from backprop_cli.launch import main

main()
