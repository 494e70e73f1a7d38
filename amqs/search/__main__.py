from amqs.search.app import main

main()
