from langsub.report.build import main

main()
