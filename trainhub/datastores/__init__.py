"""Datastores: named places for training data, registered by admins.

:mod:`.registry` holds the rules for registering, changing and removing them (names, kinds, paths,
who may write); :mod:`.files` keeps every path inside a ``server`` datastore's folder and lists it;
:mod:`.transfers` receives resumable, checksummed uploads and serves byte ranges of its files.
"""
