"""MongoDB: resource (MongoResource), stamped (a job's source-stamped collection) and
embedded/ (the embedded server).
"""
