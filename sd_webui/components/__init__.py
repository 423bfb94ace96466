"""The page as small components: nav bar, prompt bar, gallery grid with image cards, full view."""
