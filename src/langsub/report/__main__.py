from langsub.report.commands import main

main()
