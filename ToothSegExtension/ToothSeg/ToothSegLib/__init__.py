"""Slicer-side helpers of the ToothSeg module: Logic, MRML adapters, background process, catalogue."""
