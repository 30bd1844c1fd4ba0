from kdnas_deploy.cli import main

main()
