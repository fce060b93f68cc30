from nomad_rkt_driver.cli.main import main

main()
