"""scikit-learn estimators: MLPClassifier and MLPRegressor (being written)."""
