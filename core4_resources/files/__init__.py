"""Files and folders: folders (FolderResource) and paths, moves, batch_moves and markers
(crash-safe moves), archiving, names, fileops (the primitives under them).
"""
