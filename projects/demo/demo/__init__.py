"""demo: downloads sample weather readings and imports them into MongoDB."""

__project__ = "core4"
__version__ = "0.1.0"
title = "Demo project"
description = "Sample CSV readings: download -> transfer -> proc -> MongoDB -> archive"
