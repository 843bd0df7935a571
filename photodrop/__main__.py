import sys

from photodrop.cli import main

sys.exit(main())
